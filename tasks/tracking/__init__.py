"""MLflow, in one package: the names the warehouse reads (`names`), the client (`store`), the
pipeline's parent runs (`runs`) and model references -> checkpoint folders (`models`)."""
