"""Inbound providers, one module each, registered by kind.

Importing this package registers every built-in kind. To add a provider, write its module
(see `stripe.py` for the shape) and add it to the import list below.
"""

from hookhub.providers import (  # noqa: F401  (imported to register each kind)
    github,
    hmac,
    hotmart,
    kiwify,
    mercadopago,
    shopify,
    slack,
    standard,
    stripe,
)
from hookhub.providers.base import (
    InboundRequest,
    Provider,
    ProviderSettings,
    Reply,
    known_kinds,
    provider_class,
)

__all__ = ["InboundRequest", "Provider", "ProviderSettings", "Reply", "known_kinds", "provider_class"]
