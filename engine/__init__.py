"""vstui engine: guests on namespaces and cgroups, with no UI code.

Import the parts you need (``engine.config``, ``engine.runtime``, ...); this
package imports nothing heavy so that the command-line tools start fast.
"""
