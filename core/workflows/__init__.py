"""The case state machine, its guards and its clocks. The only code that sets a case's
state (DESIGN.md section 2, "one write path per change")."""
