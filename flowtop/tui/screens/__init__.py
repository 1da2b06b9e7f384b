"""Screens: main view, flow detail, group-by picker, help."""
