"""Kernel side: compile (bcc), attach (pyroute2), drain and decode."""
