import unittest

from logic import total


class TotalTest(unittest.TestCase):
    def test_sums_its_inputs(self):
        self.assertEqual(total(["40", " 2"]), 42)
        self.assertEqual(total([]), 0)

    def test_a_bad_input_is_an_error(self):
        with self.assertRaises(ValueError):
            total(["forty"])


if __name__ == "__main__":
    unittest.main()
