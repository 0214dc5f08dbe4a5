"""Encryption for hosts that hold an RSA key pair: what Django Remotes does on the wire, and
sealed task payloads for native agents.

Exactly as the original's `encryption/rsa_key.py` and `fernet_encrypt.py` (PROTOCOLS.md §3):

* RSA keys of 4096 bits (2048 at least here), e=65537; private keys as unencrypted PKCS#8
  PEM, public keys as SubjectPublicKeyInfo PEM.
* Encryption: RSA-OAEP with MGF1(SHA-256) and SHA-256, no label, standard base64.
* Signatures: RSA-PSS with MGF1(SHA-256) and the maximum salt length, over SHA-256.
* Symmetric: `cryptography.fernet.Fernet` (AES-128-CBC and HMAC-SHA256).

A sealed payload (`seal`/`unseal`) is a fresh Fernet key encrypted to the agent's public key,
next to the Fernet token of the payload's JSON: only the holder of the private key can open it.
Every failure to parse or decrypt raises `errors.Invalid`, with no detail of why.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid

from cryptography.exceptions import InvalidSignature
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from taskfleet.core import errors
from taskfleet.core.models import JSONValue

KEY_BITS = 4096  #: what the original client generates
MIN_KEY_BITS = 2048  #: smaller keys are refused
MAX_PEM_CHARS = 16_384
SEALED = "sealed"  #: the one key of a sealed payload's JSON object
SEAL_ALGORITHM = "RSA-OAEP-SHA256+Fernet"

PublicKey = rsa.RSAPublicKey
PrivateKey = rsa.RSAPrivateKey


def _oaep() -> padding.OAEP:
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    )


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError, AttributeError):
        raise errors.Invalid(f"{what} is not base64") from None


# -- keys ---------------------------------------------------------------------------------


def generate_private_key(bits: int = KEY_BITS) -> PrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM without a passphrase, as the original client saves it."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: PublicKey) -> str:
    """SubjectPublicKeyInfo PEM."""
    data = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data.decode("ascii")


def load_public_key(pem: object) -> PublicKey:
    """Parses an RSA public key in PEM. Raises `Invalid("Invalid PEM key")`, also for keys
    that are not RSA or have fewer than `MIN_KEY_BITS` bits."""
    if not isinstance(pem, str) or not pem or len(pem) > MAX_PEM_CHARS:
        raise errors.Invalid("Invalid PEM key")
    try:
        key = serialization.load_pem_public_key(pem.encode("utf-8"))
    except (ValueError, TypeError, UnicodeEncodeError):
        raise errors.Invalid("Invalid PEM key") from None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_KEY_BITS:
        raise errors.Invalid(f"Invalid PEM key: use an RSA key of at least {MIN_KEY_BITS} bits")
    return key


def load_private_key(pem: bytes) -> PrivateKey:
    """Parses an unencrypted RSA private key in PEM. Raises `Invalid`."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise errors.Invalid("not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise errors.Invalid("not an RSA private key")
    return key


# -- RSA ----------------------------------------------------------------------------------


def rsa_encrypt(key: PublicKey, text: str) -> str:
    """OAEP-SHA256 ciphertext of the UTF-8 text, in base64."""
    return base64.b64encode(key.encrypt(text.encode("utf-8"), _oaep())).decode("ascii")


def rsa_decrypt(key: PrivateKey, encrypted: str) -> str:
    """Raises `Invalid` when the text was not encrypted to this key."""
    try:
        return key.decrypt(_b64decode(encrypted, "the ciphertext"), _oaep()).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise errors.Invalid("the ciphertext was not encrypted to this key") from None


def sign(key: PrivateKey, text: str) -> str:
    """PSS-SHA256 signature of the UTF-8 text, in base64."""
    return base64.b64encode(key.sign(text.encode("utf-8"), _pss(), hashes.SHA256())).decode()


def verify(key: PublicKey, signature: object, text: str) -> bool:
    """Whether `signature` (base64) is this key's PSS-SHA256 signature of `text`."""
    if not isinstance(signature, str) or len(signature) > MAX_PEM_CHARS:
        return False
    try:
        key.verify(_b64decode(signature, "the signature"), text.encode(), _pss(), hashes.SHA256())
    except (InvalidSignature, errors.Invalid, ValueError):
        return False
    return True


# -- Fernet -------------------------------------------------------------------------------


def new_fernet_key() -> bytes:
    return Fernet.generate_key()


def uuid_fernet_key(value: str | uuid.UUID) -> bytes:
    """The original's key from a host's UUID: base64 of its 32 hex digits."""
    hex_digits = (value if isinstance(value, uuid.UUID) else uuid.UUID(value)).hex
    return base64.b64encode(hex_digits.encode("ascii"))


def fernet_encrypt(key: bytes, text: str) -> str:
    return Fernet(key).encrypt(text.encode("utf-8")).decode("ascii")


def fernet_decrypt(key: bytes, token: object, what: str = "the data") -> str:
    """Raises `Invalid` for a token made with another key, altered, or not a token at all."""
    if not isinstance(token, str):
        raise errors.Invalid(f"{what} must be a Fernet token (a string)")
    try:
        return Fernet(key).decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError):  # ValueError: a malformed key or non-UTF-8 text
        raise errors.Invalid(f"{what} was not encrypted with this key, or was altered") from None


# -- sealed payloads for native agents ------------------------------------------------------


def seal(key: PublicKey, value: JSONValue) -> dict[str, JSONValue]:
    """`{"sealed": {"alg", "key", "data"}}`: the JSON of `value` under a fresh Fernet key,
    and that key encrypted to `key`."""
    secret = new_fernet_key()
    return {
        SEALED: {
            "alg": SEAL_ALGORITHM,
            "key": rsa_encrypt(key, secret.decode("ascii")),
            "data": fernet_encrypt(secret, json.dumps(value)),
        }
    }


def is_sealed(value: JSONValue) -> bool:
    return isinstance(value, dict) and set(value) == {SEALED} and isinstance(value[SEALED], dict)


def unseal(key: PrivateKey, value: JSONValue) -> JSONValue:
    """The payload inside a sealed one. Raises `Invalid` when it is not sealed to `key`."""
    if not is_sealed(value):
        raise errors.Invalid("the payload is not sealed")
    inner = value[SEALED]
    if inner.get("alg") != SEAL_ALGORITHM:
        raise errors.Invalid(f"unknown sealing algorithm {inner.get('alg')!r}")
    secret = rsa_decrypt(key, inner.get("key")).encode("utf-8")
    text = fernet_decrypt(secret, inner.get("data"), "the sealed payload")
    try:
        return json.loads(text)
    except ValueError:
        raise errors.Invalid("the sealed payload is not JSON") from None
