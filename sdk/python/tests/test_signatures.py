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


def test_malformed_sender_input_is_false_never_an_exception():
    import base64
    secret, msg, ts, body = "plain-secret", "evt-1", str(int(time.time())), b"{}"
    good = base64.b64encode(hmac.new(secret.encode(), f"{msg}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    whsec = "whsec_" + base64.b64encode(b"k" * 24).decode()
    # Sanity: the well-formed headers verify, also as raw bytes.
    assert verify_signature(body, f"v1,{good}", secret, msg_id=msg, timestamp=ts)
    assert verify_signature(body, f"v1,{good}".encode(), secret, msg_id=msg.encode(), timestamp=ts.encode())
    for timestamp in ("abc", "", " ", "1.5", "-5", "1e9", "١٢٣", "9" * 400, b"\xff", 1.5, True, object()):
        for s in (secret, whsec):
            assert verify_signature(body, f"v1,{good}", s, msg_id=msg, timestamp=timestamp) is False, timestamp
            assert verify_signature(body, f"v1,{good}", s, msg_id=msg, timestamp=timestamp, tolerance=None) is False
    for signature in ("", "garbage", "v1", "v1,", ",", "v1,!!!", "v1,AAA", "v1,é", "v1,\udcff", "v2,xyz v1,%%",
                      "sha256=", "sha256=é", "sha256=\udcff", b"\xff\xfe", b"sha256=\xff", 42, None):
        for s in (secret, whsec):
            assert verify_signature(body, signature, s, msg_id=msg, timestamp=ts) is False, signature
    for msg_id in (b"\xff", 7, "évt-\udcff"):
        assert verify_signature(body, f"v1,{good}", secret, msg_id=msg_id, timestamp=ts) is False, msg_id
