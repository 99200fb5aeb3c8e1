"""The reading side: result files into a DataFrame (load), tables (tables, layout), exports,
the regression gate, plots, datasheet peaks and carbon. Nothing here imports torch or
bench.measure, so `wattbench report` and `compare` start like command-line tools."""
