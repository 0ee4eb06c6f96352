"""What the API tells its embedded MLflow through the environment, read there by `hokusai.mlflow_auth`."""

ASSERTION_SECRET_FILE_ENV = "HOKUSAI_ASSERTION_SECRET_FILE"  # the file (0600) holding the assertions' shared secret
STORE_CACHE_ENV = "HOKUSAI_MLFLOW_STORE_CACHE"  # the counter MLflow's workers share to clear their auth-store caches
