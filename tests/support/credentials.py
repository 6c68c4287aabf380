"""The test org and its credentials, written once.

Tokens here are test data for a local platform on loopback, never real secrets.
"""

from __future__ import annotations

from typing import Final

#: The org of every test: application client IDs are ``a:abc123:...``.
ORG: Final = "abc123"
#: The application API key of ``ORG`` and its token.
API_KEY: Final = f"a-{ORG}-k1"
TOKEN: Final = "tok"
#: A device and a gateway of ``ORG`` (token authentication, user ``use-token-auth``).
DEVICE: Final = f"d:{ORG}:sensor:s1"
DEVICE_TOKEN: Final = "devtok"
GATEWAY: Final = f"g:{ORG}:gw:g1"
GATEWAY_TOKEN: Final = "gwtok"
#: A second org, to prove one org never sees another.
OTHER_ORG: Final = "xyz789"
OTHER_ORG_KEY: Final = f"a-{OTHER_ORG}-k2"
OTHER_ORG_TOKEN: Final = "tok2"
#: A token shaped like the ones the platform issues (18 characters, mixed classes): for the
#: tests that check a token is masked or accepted by the token rule.
STRONG_TOKEN: Final = "MP$08VKz!8rXwnR-Q*"
