"""Stage `report`: the DuckDB warehouse (MLflow + OUT folders), the analysts' SQL, the pictures."""
