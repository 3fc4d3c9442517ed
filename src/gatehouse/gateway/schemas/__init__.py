"""The gateway surfaces' published contract: request bodies as the providers document them (one set of Pydantic
models that both validates and generates the OpenAPI schema), their answers, and their error shapes."""
