"""Stored responses of the OpenAI Responses API: kept per user by Gatehouse, whatever the upstream, so that
GET/DELETE /v1/responses/{id}, its input items and `previous_response_id` work (service.py)."""
