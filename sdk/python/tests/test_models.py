"""Models are dicts of the response with attribute access; pages iterate over their items."""

import json

from aragora.models import Model, Template, page_of


def test_a_page_iterates_its_items_and_stays_a_serialisable_dict():
    body = {"items": [{"id": "tmpl-1"}, {"id": "tmpl-2"}], "total": 2, "next_cursor": None}
    page = page_of(body, Template)
    assert [t.id for t in page] == ["tmpl-1", "tmpl-2"]
    assert [t.id for t in page.items] == ["tmpl-1", "tmpl-2"]
    assert all(isinstance(t, Template) for t in page.items)
    assert page["items"][1].id == "tmpl-2" and page.total == 2 and page.next_cursor is None
    # Still the response as a dict: dict code and json.dumps see the keys.
    assert json.loads(json.dumps(page)) == body
    assert dict(page.items()) == dict(page) == body
    assert sorted(page.keys()) == ["items", "next_cursor", "total"]


def test_an_empty_page_iterates_nothing():
    page = page_of({"items": [], "total": 0, "next_cursor": None}, Model)
    assert list(page) == [] and page.items == [] and page.total == 0
