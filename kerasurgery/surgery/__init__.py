"""Surgery workflows built on the analyses: which channels to prune (`ranking`)."""
