"""Model providers: one small interface, chosen by the model name's prefix (`local`, `openai:`, `anthropic:`)."""

from baton.providers.base import (
    Completion,
    Message,
    PermanentProviderError,
    Provider,
    ProviderError,
    ToolCall,
    ToolSpec,
    TransientProviderError,
)
from baton.providers.registry import check_model, get_provider, provider_names, register_provider, split_model
from baton.providers.scripted import ScriptedModel

__all__ = [
    "Completion",
    "Message",
    "PermanentProviderError",
    "Provider",
    "ProviderError",
    "ScriptedModel",
    "ToolCall",
    "ToolSpec",
    "TransientProviderError",
    "check_model",
    "get_provider",
    "provider_names",
    "register_provider",
    "split_model",
]
