"""HyperPod's lifecycle scripts, as committed files (run by HyperPod on every new node)."""
