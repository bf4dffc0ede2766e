import hashlib
import hmac
import time

from aragora.webhooks import verify_signature


def test_standard_webhooks_vector():
    secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
    body = b'{"email":"test@example.com","username":"test_user"}'
    sig = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
    assert verify_signature(body, sig, secret, msg_id="msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", timestamp=1649367553,
                            tolerance=None)
    assert not verify_signature(body + b" ", sig, secret, msg_id="msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                                timestamp=1649367553, tolerance=None)
    # An old timestamp is refused when a tolerance applies.
    assert not verify_signature(body, sig, secret, msg_id="msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", timestamp=1649367553)


def test_guide_scheme_matches_the_guides_verifier():
    secret, body = "your-hmac-secret", b'{"event_type":"debate.completed"}'
    sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert verify_signature(body, sig, secret)
    assert not verify_signature(body, sig, "other-secret")
    assert not verify_signature(body, "sha256=00", secret)


def test_standard_scheme_with_plain_secret_and_rotation_list():
    import base64
    secret, msg, ts, body = "plain-secret", "evt-1", str(int(time.time())), b"{}"
    good = base64.b64encode(hmac.new(secret.encode(), f"{msg}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    assert verify_signature(body, f"v1,AAAA v1,{good}", secret, msg_id=msg, timestamp=ts)
    assert not verify_signature(body, "v1,AAAA", secret, msg_id=msg, timestamp=ts)
    assert not verify_signature(body, f"v1,{good}", secret)  # needs msg_id and timestamp
