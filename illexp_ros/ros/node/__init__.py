"""The live node, `illexp_node` (illexp_node.py), and what it is made of."""
