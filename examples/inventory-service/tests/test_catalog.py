"""Unit tests of the catalogue."""

import unittest

from inventory import catalog


class CatalogTest(unittest.TestCase):
    def test_seeds_the_same_catalogue_every_time(self):
        self.assertEqual(catalog.seed(), catalog.seed())
        self.assertEqual(len(catalog.seed()), catalog.CATALOG_SIZE)

    def test_fifteen_percent_of_items_are_made_in_house(self):
        in_house = [item for item in catalog.seed().values() if item.supplier is None]
        self.assertEqual(len(in_house), catalog.CATALOG_SIZE * 15 // 100)

    def test_reserved_stock_never_exceeds_stock_on_hand(self):
        for item in catalog.seed().values():
            self.assertLessEqual(item.reserved, item.on_hand, item.sku)

    def test_availability_subtracts_reserved_stock(self):
        item = catalog.seed()["sku-0005"]
        answer = catalog.availability(item)
        self.assertEqual(answer["available"], item.on_hand - item.reserved)
        self.assertEqual(answer["sku"], "sku-0005")

    def test_restock_lead_time_defaults(self):
        answer = catalog.availability(catalog.seed()["sku-0010"])
        self.assertEqual(answer["restock_lead_days"], catalog.DEFAULT_LEAD_TIME_DAYS)


if __name__ == "__main__":
    unittest.main()
