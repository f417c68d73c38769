"""vstui front ends: the Textual console and the util-vserver style tools."""
