"""The reply webhook: each inbox message POSTed to its agency's `reply_webhook.url`,
signed as Standard Webhooks v1 (`signing.py`), delivered and retried from durable state
(`pusher.py`). It listens to the inbox (gateway.inbox.filing.Inbox.listen) and never
holds up filing."""
