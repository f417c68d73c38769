"""Processes: the fast /proc scanner, context attribution, trees, signals.

``scan`` reads /proc; ``attribution`` maps processes to guests by their
cgroups; ``tree`` orders them parent-first; ``signals`` is vkill's logic;
``format`` renders ps / vserver-stat / top columns. Nothing heavy is imported
here so that ``vps`` starts fast.
"""
