"""`illexp_demo` (demo.py), its generated sample bag (sample_data.py) and the node benchmark (node_bench.py)."""
