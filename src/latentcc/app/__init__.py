"""The application: the `latentcc` command line, fine-tuning recipes, the demo, comparisons and reproductions."""
