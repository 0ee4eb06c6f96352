"""The tokenized model registry: token claims in our database, model versions in MLflow, created as the caller.

Every MLflow call is made with the caller's own identity, so MLflow's permissions decide what they may read and
write, and the caller becomes MANAGE on a registered model they create. The modules, in the order a registration
uses them:

- `sources`: the run behind a model URI, read as the caller, and the source MLflow is given for it;
- `claims`: token claims in the database, race-free on the primary-key insert;
- `versions`: model versions in MLflow, created with every tag in one call, searched, shown;
- `tokenized`: `POST /api/v1/models/tokenized`, the claim and the version together, and its repeat;
- `lookups`: tokenized versions listed and read, counted only while their model holds the token;
- `baselines`: the platform's `hokusai-baseline-<type>` models;
- `transfers`: an admin's token transfer and release.
"""
