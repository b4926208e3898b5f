import idna


def test_idna():
    assert idna.encode("example.com") == b"example.com"
