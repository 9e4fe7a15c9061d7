import streamlit as st

from core.permissions import Action
from dashboard.guard import require_page

actor = require_page(Action.VIEW_QUEUE)
st.title("My day")
