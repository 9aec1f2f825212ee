"""The project's metrics as `evaluate` modules: `glue/glue.py`, `squad/squad.py`, `squad_v2/squad_v2.py`.

`evaluate.load("glue", ...)` fetches the module code from the Hub; these folders ship inside the
package instead, so `nasbert_hf.metrics.load_metric("glue", config_name="sst2")` loads them by path
with no network. They hold no formulas: each wraps the pure functions of `nasbert_hf.metrics`, so
the copy `evaluate` keeps in its modules cache can never compute stale numbers.
"""
