"""Widgets of the vstui console."""
