"""Online serving: FastAPI predictions from verified champion/challenger versions, canary
routing, micro-batched exact SHAP, Prometheus metrics, and the prediction log drift reads."""
