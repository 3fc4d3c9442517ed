"""Model access: who may use which model, alias or upstream."""
