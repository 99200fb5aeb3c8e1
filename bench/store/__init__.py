"""The fleet's results store (`wattbench ingest`, `wattbench fleet`, `wattbench report STORE`).

    rows.py   a run's rows: one per case and device (a job's rank), the columns and their types
    store.py  the store itself: Parquet parts, the index of runs, the writer's lock, ingest,
              compaction, reading back (pyarrow, imported only here)

The reading side: no torch. pyarrow is an optional extra (`pip install 'wattbench[store]'`).
"""
