"""Screens of the vstui console."""
