"""Case Desk domain code. Never imports streamlit or plotly (DESIGN.md section 2)."""
