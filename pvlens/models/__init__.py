"""Models and what comes from outside: the offline model registry (pinned wheels, checksums, conversion), loading
a :class:`~pvlens.models.loading.ChatModel`, the pinned data wheels, and the OpenAI-compatible client."""
