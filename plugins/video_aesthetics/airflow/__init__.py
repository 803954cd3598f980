"""The Airflow wing: the operator, the DAG's task bodies, the object store, the extra link and the provider.

Only modules under this package import Airflow; nothing here imports torch at import time, since
Airflow imports operators while parsing DAGs, in processes that later fork task runners.
"""
