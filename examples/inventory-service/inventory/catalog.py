"""The stock catalogue: items, their suppliers, and what a stock lookup answers.

The catalogue is seeded deterministically with CATALOG_SIZE items, sku-0000 to sku-0999. Items
whose number n has n % 20 < 3 (exactly 15%) are made in-house and have no supplier.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Days until a restock when nothing better is known.
DEFAULT_LEAD_TIME_DAYS = 14

#: How many items the catalogue is seeded with.
CATALOG_SIZE = 1000


@dataclass(frozen=True)
class Supplier:
    name: str
    lead_time_days: int


@dataclass(frozen=True)
class Item:
    sku: str
    name: str
    on_hand: int
    reserved: int
    #: None for items made in-house.
    supplier: Supplier | None


SUPPLIERS = (
    Supplier("Northwind Components", 5),
    Supplier("Contoso Parts", 9),
    Supplier("Fabrikam Metals", 21),
)


def sku_for(n: int) -> str:
    return f"sku-{n:04d}"


def seed(size: int = CATALOG_SIZE) -> dict[str, Item]:
    """The demo catalogue, the same on every start."""
    items = {}
    for n in range(size):
        supplier = None if n % 20 < 3 else SUPPLIERS[n % len(SUPPLIERS)]
        on_hand = (n * 37) % 120
        reserved = min(on_hand, (n * 11) % 25)
        items[sku_for(n)] = Item(sku_for(n), f"part {n:04d}", on_hand, reserved, supplier)
    return items


def availability(item: Item) -> dict:
    """What GET /items/{sku} answers for an item."""
    available = item.on_hand - item.reserved
    lead_days = DEFAULT_LEAD_TIME_DAYS
    return {
        "sku": item.sku,
        "name": item.name,
        "on_hand": item.on_hand,
        "reserved": item.reserved,
        "available": available,
        "restock_lead_days": lead_days,
    }
