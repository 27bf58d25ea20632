"""Write-a-function problems with tests (``data.path=code_tasks``), for the sandboxed code reward.

    prompt:      "Write a Python function `is_prime(n)` that returns True when the integer n is
                  a prime number, else False. Answer with the code in a ```python block."
    entry_point: "is_prime"
    tests:       ["assert is_prime(2) is True", "assert is_prime(1) is False", ...]
    solution:    a reference implementation that passes every test

48 small problems (strings, lists, number theory), each with 3-6 hand-written ``assert`` tests
whose expected values were worked out independently of the reference solutions (a test runs
every reference in the sandbox and checks that it passes). 8 problems, chosen by a seeded
shuffle, are held out as ``validation``. Score with ``reward=code`` (``rewards.CodeReward``).
"""

from __future__ import annotations

import random
import textwrap
from functools import lru_cache
from typing import NamedTuple

import datasets

CODE_TASKS = "code_tasks"
NUM_VALIDATION = 8
SEED = 0


class CodeProblem(NamedTuple):
    signature: str  # how the prompt names the function, e.g. "gcd(a, b)"
    description: str  # completes "Write a Python function `f(x)` that ..."
    solution: str
    tests: tuple[str, ...]

    @property
    def entry_point(self) -> str:
        return self.signature.split("(", 1)[0]


def _p(signature: str, description: str, solution: str, *tests: str) -> CodeProblem:
    return CodeProblem(signature, description, textwrap.dedent(solution).strip() + "\n", tests)


PROBLEMS = (
    _p(
        "reverse_string(s)",
        "returns the string s reversed",
        """
        def reverse_string(s):
            return s[::-1]
        """,
        'assert reverse_string("abc") == "cba"',
        'assert reverse_string("") == ""',
        'assert reverse_string("racecar") == "racecar"',
        'assert reverse_string("ab c") == "c ba"',
    ),
    _p(
        "sum_of_digits(n)",
        "returns the sum of the decimal digits of the non-negative integer n",
        """
        def sum_of_digits(n):
            return sum(int(d) for d in str(n))
        """,
        "assert sum_of_digits(0) == 0",
        "assert sum_of_digits(123) == 6",
        "assert sum_of_digits(9999) == 36",
        "assert sum_of_digits(1005) == 6",
    ),
    _p(
        "is_prime(n)",
        "returns True when the integer n is a prime number, else False",
        """
        def is_prime(n):
            if n < 2:
                return False
            d = 2
            while d * d <= n:
                if n % d == 0:
                    return False
                d += 1
            return True
        """,
        "assert is_prime(2) is True",
        "assert is_prime(1) is False",
        "assert is_prime(0) is False",
        "assert is_prime(17) is True",
        "assert is_prime(21) is False",
        "assert is_prime(97) is True",
    ),
    _p(
        "fizzbuzz(n)",
        'returns "Fizz" for multiples of 3, "Buzz" for multiples of 5, "FizzBuzz" for '
        "multiples of both, and otherwise n as a string",
        """
        def fizzbuzz(n):
            if n % 15 == 0:
                return "FizzBuzz"
            if n % 3 == 0:
                return "Fizz"
            if n % 5 == 0:
                return "Buzz"
            return str(n)
        """,
        'assert fizzbuzz(3) == "Fizz"',
        'assert fizzbuzz(5) == "Buzz"',
        'assert fizzbuzz(15) == "FizzBuzz"',
        'assert fizzbuzz(7) == "7"',
        'assert fizzbuzz(30) == "FizzBuzz"',
    ),
    _p(
        "factorial(n)",
        "returns n! for a non-negative integer n",
        """
        def factorial(n):
            result = 1
            for k in range(2, n + 1):
                result *= k
            return result
        """,
        "assert factorial(0) == 1",
        "assert factorial(1) == 1",
        "assert factorial(5) == 120",
        "assert factorial(10) == 3628800",
    ),
    _p(
        "fibonacci(n)",
        "returns the n-th Fibonacci number, where fibonacci(0) == 0 and fibonacci(1) == 1",
        """
        def fibonacci(n):
            a, b = 0, 1
            for _ in range(n):
                a, b = b, a + b
            return a
        """,
        "assert fibonacci(0) == 0",
        "assert fibonacci(1) == 1",
        "assert fibonacci(2) == 1",
        "assert fibonacci(10) == 55",
        "assert fibonacci(20) == 6765",
    ),
    _p(
        "count_vowels(s)",
        "returns how many vowels (a, e, i, o, u, in either case) the string s contains",
        """
        def count_vowels(s):
            return sum(c in "aeiou" for c in s.lower())
        """,
        'assert count_vowels("hello") == 2',
        'assert count_vowels("AEIOU") == 5',
        'assert count_vowels("xyz") == 0',
        'assert count_vowels("Programming") == 3',
    ),
    _p(
        "is_palindrome(s)",
        "returns True when the string s reads the same backwards (case-sensitive, every "
        "character counts), else False",
        """
        def is_palindrome(s):
            return s == s[::-1]
        """,
        'assert is_palindrome("racecar") is True',
        'assert is_palindrome("abca") is False',
        'assert is_palindrome("") is True',
        'assert is_palindrome("Aa") is False',
    ),
    _p(
        "max_of_list(xs)",
        "returns the largest number in the non-empty list xs",
        """
        def max_of_list(xs):
            best = xs[0]
            for x in xs[1:]:
                if x > best:
                    best = x
            return best
        """,
        "assert max_of_list([1, 5, 3]) == 5",
        "assert max_of_list([-2, -7]) == -2",
        "assert max_of_list([4]) == 4",
    ),
    _p(
        "gcd(a, b)",
        "returns the greatest common divisor of the positive integers a and b",
        """
        def gcd(a, b):
            while b:
                a, b = b, a % b
            return a
        """,
        "assert gcd(12, 18) == 6",
        "assert gcd(7, 13) == 1",
        "assert gcd(100, 10) == 10",
        "assert gcd(9, 9) == 9",
    ),
    _p(
        "lcm(a, b)",
        "returns the least common multiple of the positive integers a and b",
        """
        def lcm(a, b):
            x, y = a, b
            while y:
                x, y = y, x % y
            return a * b // x
        """,
        "assert lcm(4, 6) == 12",
        "assert lcm(5, 7) == 35",
        "assert lcm(3, 9) == 9",
        "assert lcm(1, 1) == 1",
    ),
    _p(
        "celsius_to_fahrenheit(c)",
        "converts a temperature from degrees Celsius to degrees Fahrenheit",
        """
        def celsius_to_fahrenheit(c):
            return c * 9 / 5 + 32
        """,
        "assert celsius_to_fahrenheit(0) == 32",
        "assert celsius_to_fahrenheit(100) == 212",
        "assert celsius_to_fahrenheit(-40) == -40",
        "assert abs(celsius_to_fahrenheit(37) - 98.6) < 1e-9",
    ),
    _p(
        "count_words(s)",
        "returns the number of whitespace-separated words in the string s",
        """
        def count_words(s):
            return len(s.split())
        """,
        'assert count_words("hello world") == 2',
        'assert count_words("") == 0',
        'assert count_words("  a  b   c ") == 3',
    ),
    _p(
        "capitalize_words(s)",
        "returns s with the first letter of every space-separated word in upper case and "
        "every other character unchanged",
        """
        def capitalize_words(s):
            return " ".join(w[:1].upper() + w[1:] for w in s.split(" "))
        """,
        'assert capitalize_words("hello world") == "Hello World"',
        'assert capitalize_words("a b") == "A B"',
        'assert capitalize_words("already Fine") == "Already Fine"',
        'assert capitalize_words("mIxed") == "MIxed"',
    ),
    _p(
        "remove_duplicates(xs)",
        "returns the list xs without repeated elements, keeping the first occurrence of each "
        "in its original order",
        """
        def remove_duplicates(xs):
            seen = []
            for x in xs:
                if x not in seen:
                    seen.append(x)
            return seen
        """,
        "assert remove_duplicates([1, 2, 1, 3, 2]) == [1, 2, 3]",
        "assert remove_duplicates([]) == []",
        'assert remove_duplicates(["a", "a"]) == ["a"]',
    ),
    _p(
        "second_largest(xs)",
        "returns the second largest distinct value of the list xs (which has at least two "
        "distinct values)",
        """
        def second_largest(xs):
            return sorted(set(xs))[-2]
        """,
        "assert second_largest([1, 3, 2]) == 2",
        "assert second_largest([5, 5, 4]) == 4",
        "assert second_largest([-1, -2]) == -2",
    ),
    _p(
        "is_anagram(a, b)",
        "returns True when the strings a and b contain the same characters the same number of "
        "times (case-sensitive), else False",
        """
        def is_anagram(a, b):
            return sorted(a) == sorted(b)
        """,
        'assert is_anagram("listen", "silent") is True',
        'assert is_anagram("abc", "abd") is False',
        'assert is_anagram("aab", "abb") is False',
        'assert is_anagram("", "") is True',
    ),
    _p(
        "count_char(s, c)",
        "returns how many times the character c occurs in the string s",
        """
        def count_char(s, c):
            return sum(1 for x in s if x == c)
        """,
        'assert count_char("banana", "a") == 3',
        'assert count_char("banana", "z") == 0',
        'assert count_char("", "a") == 0',
    ),
    _p(
        "flatten(xss)",
        "returns one list with the elements of the lists in xss, in order",
        """
        def flatten(xss):
            return [x for xs in xss for x in xs]
        """,
        "assert flatten([[1, 2], [3], []]) == [1, 2, 3]",
        "assert flatten([]) == []",
        'assert flatten([["a"], ["b", "c"]]) == ["a", "b", "c"]',
    ),
    _p(
        "square_evens(xs)",
        "returns the squares of the even numbers of the list xs, in order",
        """
        def square_evens(xs):
            return [x * x for x in xs if x % 2 == 0]
        """,
        "assert square_evens([1, 2, 3, 4]) == [4, 16]",
        "assert square_evens([]) == []",
        "assert square_evens([0, -2, 5]) == [0, 4]",
    ),
    _p(
        "digits_to_int(ds)",
        "returns the integer whose decimal digits are the list ds, most significant first",
        """
        def digits_to_int(ds):
            n = 0
            for d in ds:
                n = 10 * n + d
            return n
        """,
        "assert digits_to_int([1, 2, 3]) == 123",
        "assert digits_to_int([0]) == 0",
        "assert digits_to_int([4, 0, 5]) == 405",
    ),
    _p(
        "binary_string(n)",
        'returns the binary representation of the non-negative integer n, without a "0b" prefix',
        """
        def binary_string(n):
            return format(n, "b")
        """,
        'assert binary_string(0) == "0"',
        'assert binary_string(5) == "101"',
        'assert binary_string(8) == "1000"',
        'assert binary_string(255) == "11111111"',
    ),
    _p(
        "count_positive(xs)",
        "returns how many numbers in the list xs are greater than zero",
        """
        def count_positive(xs):
            return sum(1 for x in xs if x > 0)
        """,
        "assert count_positive([1, -2, 3, 0]) == 2",
        "assert count_positive([]) == 0",
        "assert count_positive([-1]) == 0",
    ),
    _p(
        "running_sum(xs)",
        "returns the list of cumulative sums of the list xs",
        """
        def running_sum(xs):
            out, total = [], 0
            for x in xs:
                total += x
                out.append(total)
            return out
        """,
        "assert running_sum([1, 2, 3]) == [1, 3, 6]",
        "assert running_sum([]) == []",
        "assert running_sum([5, -5, 5]) == [5, 0, 5]",
    ),
    _p(
        "is_sorted(xs)",
        "returns True when the list xs is in non-decreasing order, else False",
        """
        def is_sorted(xs):
            return all(a <= b for a, b in zip(xs, xs[1:]))
        """,
        "assert is_sorted([1, 2, 2, 3]) is True",
        "assert is_sorted([3, 1]) is False",
        "assert is_sorted([]) is True",
        "assert is_sorted([1]) is True",
    ),
    _p(
        "caesar_shift(s, k)",
        "shifts every lowercase letter of the string s forward by k places in the alphabet, "
        "wrapping from z to a, and leaves every other character unchanged",
        """
        def caesar_shift(s, k):
            out = []
            for c in s:
                if "a" <= c <= "z":
                    c = chr((ord(c) - ord("a") + k) % 26 + ord("a"))
                out.append(c)
            return "".join(out)
        """,
        'assert caesar_shift("abc", 1) == "bcd"',
        'assert caesar_shift("xyz", 2) == "zab"',
        'assert caesar_shift("hello, world", 13) == "uryyb, jbeyq"',
        'assert caesar_shift("abc", 26) == "abc"',
    ),
    _p(
        "triangle_number(n)",
        "returns 1 + 2 + ... + n for a non-negative integer n",
        """
        def triangle_number(n):
            return n * (n + 1) // 2
        """,
        "assert triangle_number(0) == 0",
        "assert triangle_number(1) == 1",
        "assert triangle_number(4) == 10",
        "assert triangle_number(100) == 5050",
    ),
    _p(
        "is_power_of_two(n)",
        "returns True when the non-negative integer n is a power of two (1, 2, 4, ...), else False",
        """
        def is_power_of_two(n):
            return n > 0 and n & (n - 1) == 0
        """,
        "assert is_power_of_two(1) is True",
        "assert is_power_of_two(2) is True",
        "assert is_power_of_two(6) is False",
        "assert is_power_of_two(64) is True",
        "assert is_power_of_two(0) is False",
    ),
    _p(
        "list_product(xs)",
        "returns the product of the numbers in the list xs (1 for an empty list)",
        """
        def list_product(xs):
            result = 1
            for x in xs:
                result *= x
            return result
        """,
        "assert list_product([2, 3, 4]) == 24",
        "assert list_product([]) == 1",
        "assert list_product([5, 0]) == 0",
    ),
    _p(
        "clamp(x, lo, hi)",
        "returns x limited to the range from lo to hi (lo <= hi)",
        """
        def clamp(x, lo, hi):
            return max(lo, min(x, hi))
        """,
        "assert clamp(5, 0, 10) == 5",
        "assert clamp(-1, 0, 10) == 0",
        "assert clamp(11, 0, 10) == 10",
    ),
    _p(
        "longest_word(s)",
        "returns the longest space-separated word of the non-empty string s (the first one "
        "when several are equally long)",
        """
        def longest_word(s):
            best = ""
            for w in s.split():
                if len(w) > len(best):
                    best = w
            return best
        """,
        'assert longest_word("a bb ccc") == "ccc"',
        'assert longest_word("hi yo") == "hi"',
        'assert longest_word("one") == "one"',
    ),
    _p(
        "merge_sorted(a, b)",
        "merges the sorted lists a and b into one sorted list",
        """
        def merge_sorted(a, b):
            out, i, j = [], 0, 0
            while i < len(a) and j < len(b):
                if a[i] <= b[j]:
                    out.append(a[i])
                    i += 1
                else:
                    out.append(b[j])
                    j += 1
            return out + a[i:] + b[j:]
        """,
        "assert merge_sorted([1, 3], [2, 4]) == [1, 2, 3, 4]",
        "assert merge_sorted([], [1]) == [1]",
        "assert merge_sorted([1, 1], [1]) == [1, 1, 1]",
    ),
    _p(
        "char_frequency(s)",
        "returns a dict mapping each character of the string s to the number of times it occurs",
        """
        def char_frequency(s):
            counts = {}
            for c in s:
                counts[c] = counts.get(c, 0) + 1
            return counts
        """,
        'assert char_frequency("aab") == {"a": 2, "b": 1}',
        'assert char_frequency("") == {}',
        'assert char_frequency("abc") == {"a": 1, "b": 1, "c": 1}',
    ),
    _p(
        "is_leap_year(year)",
        "returns True when year is a leap year of the Gregorian calendar, else False",
        """
        def is_leap_year(year):
            return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        """,
        "assert is_leap_year(2000) is True",
        "assert is_leap_year(1900) is False",
        "assert is_leap_year(2024) is True",
        "assert is_leap_year(2023) is False",
    ),
    _p(
        "reverse_words(s)",
        "returns the words of the string s (separated by single spaces) in reverse order, "
        "separated by single spaces",
        """
        def reverse_words(s):
            return " ".join(reversed(s.split()))
        """,
        'assert reverse_words("hello world") == "world hello"',
        'assert reverse_words("a b c") == "c b a"',
        'assert reverse_words("one") == "one"',
    ),
    _p(
        "chunk(xs, n)",
        "splits the list xs into consecutive lists of n elements (the last one may be shorter)",
        """
        def chunk(xs, n):
            return [xs[i : i + n] for i in range(0, len(xs), n)]
        """,
        "assert chunk([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]",
        "assert chunk([], 3) == []",
        "assert chunk([1, 2], 2) == [[1, 2]]",
    ),
    _p(
        "mean(xs)",
        "returns the arithmetic mean of the non-empty list of numbers xs",
        """
        def mean(xs):
            return sum(xs) / len(xs)
        """,
        "assert mean([1, 2, 3]) == 2",
        "assert mean([1, 2]) == 1.5",
        "assert mean([-1, 1]) == 0",
    ),
    _p(
        "median(xs)",
        "returns the median of the non-empty list of numbers xs (the mean of the two middle "
        "values when its length is even)",
        """
        def median(xs):
            s = sorted(xs)
            mid = len(s) // 2
            return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
        """,
        "assert median([3, 1, 2]) == 2",
        "assert median([4, 1, 3, 2]) == 2.5",
        "assert median([5]) == 5",
    ),
    _p(
        "count_uppercase(s)",
        "returns how many upper-case letters the string s contains",
        """
        def count_uppercase(s):
            return sum(1 for c in s if c.isupper())
        """,
        'assert count_uppercase("Hello World") == 2',
        'assert count_uppercase("abc") == 0',
        'assert count_uppercase("ABC") == 3',
    ),
    _p(
        "to_snake_case(s)",
        'converts a camelCase or PascalCase name to snake_case ("HelloWorld" -> "hello_world")',
        """
        def to_snake_case(s):
            out = []
            for i, c in enumerate(s):
                if c.isupper() and i > 0:
                    out.append("_")
                out.append(c.lower())
            return "".join(out)
        """,
        'assert to_snake_case("HelloWorld") == "hello_world"',
        'assert to_snake_case("camelCaseString") == "camel_case_string"',
        'assert to_snake_case("a") == "a"',
    ),
    _p(
        "nth_prime(n)",
        "returns the n-th prime number, counting from nth_prime(1) == 2",
        """
        def nth_prime(n):
            count, candidate = 0, 1
            while count < n:
                candidate += 1
                if all(candidate % d for d in range(2, int(candidate**0.5) + 1)):
                    count += 1
            return candidate
        """,
        "assert nth_prime(1) == 2",
        "assert nth_prime(2) == 3",
        "assert nth_prime(5) == 11",
        "assert nth_prime(10) == 29",
    ),
    _p(
        "digital_root(n)",
        "returns the single digit reached by repeatedly summing the decimal digits of the "
        "non-negative integer n",
        """
        def digital_root(n):
            while n >= 10:
                n = sum(int(d) for d in str(n))
            return n
        """,
        "assert digital_root(0) == 0",
        "assert digital_root(16) == 7",
        "assert digital_root(942) == 6",
        "assert digital_root(132189) == 6",
    ),
    _p(
        "roman_numeral(n)",
        "returns the Roman numeral of the integer n, 1 <= n <= 3999",
        """
        def roman_numeral(n):
            values = [(1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"),
                      (90, "XC"), (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"),
                      (4, "IV"), (1, "I")]
            out = ""
            for value, letters in values:
                while n >= value:
                    out += letters
                    n -= value
            return out
        """,
        'assert roman_numeral(1) == "I"',
        'assert roman_numeral(4) == "IV"',
        'assert roman_numeral(9) == "IX"',
        'assert roman_numeral(58) == "LVIII"',
        'assert roman_numeral(1994) == "MCMXCIV"',
    ),
    _p(
        "is_armstrong(n)",
        "returns True when the positive integer n equals the sum of its decimal digits each "
        "raised to the power of the number of digits (153 = 1**3 + 5**3 + 3**3), else False",
        """
        def is_armstrong(n):
            digits = str(n)
            return n == sum(int(d) ** len(digits) for d in digits)
        """,
        "assert is_armstrong(153) is True",
        "assert is_armstrong(370) is True",
        "assert is_armstrong(10) is False",
        "assert is_armstrong(9) is True",
    ),
    _p(
        "rotate_list(xs, k)",
        "returns the list xs rotated k places to the right (k >= 0)",
        """
        def rotate_list(xs, k):
            if not xs:
                return []
            k %= len(xs)
            return xs[len(xs) - k :] + xs[: len(xs) - k]
        """,
        "assert rotate_list([1, 2, 3, 4], 1) == [4, 1, 2, 3]",
        "assert rotate_list([1, 2, 3], 3) == [1, 2, 3]",
        "assert rotate_list([], 2) == []",
        "assert rotate_list([1, 2, 3], 4) == [3, 1, 2]",
    ),
    _p(
        "sum_of_squares(n)",
        "returns 1**2 + 2**2 + ... + n**2 for a non-negative integer n",
        """
        def sum_of_squares(n):
            return sum(k * k for k in range(1, n + 1))
        """,
        "assert sum_of_squares(0) == 0",
        "assert sum_of_squares(3) == 14",
        "assert sum_of_squares(10) == 385",
    ),
    _p(
        "has_unique_chars(s)",
        "returns True when no character occurs twice in the string s, else False",
        """
        def has_unique_chars(s):
            return len(set(s)) == len(s)
        """,
        'assert has_unique_chars("abc") is True',
        'assert has_unique_chars("aba") is False',
        'assert has_unique_chars("") is True',
    ),
    _p(
        "hamming_distance(a, b)",
        "returns the number of positions at which the equally long strings a and b differ",
        """
        def hamming_distance(a, b):
            return sum(x != y for x, y in zip(a, b))
        """,
        'assert hamming_distance("karolin", "kathrin") == 3',
        'assert hamming_distance("abc", "abc") == 0',
        'assert hamming_distance("a", "b") == 1',
    ),
)


def format_prompt(problem: CodeProblem) -> str:
    """The prompt for ``problem``."""
    return (
        f"Write a Python function `{problem.signature}` that {problem.description}. "
        "Answer with the code in a ```python block."
    )


@lru_cache(maxsize=1)
def build_code_tasks() -> datasets.DatasetDict:
    """The code problems (see the module docstring), built once per process.

    Returns:
        ``DatasetDict`` with ``train`` (40 problems) and ``validation`` (8); columns
        ``prompt``, ``entry_point``, ``tests`` (list of assert statements), ``solution``.
    """
    order = list(range(len(PROBLEMS)))
    random.Random(SEED).shuffle(order)
    features = datasets.Features(
        {
            "prompt": datasets.Value("string"),
            "entry_point": datasets.Value("string"),
            "tests": datasets.Sequence(datasets.Value("string")),
            "solution": datasets.Value("string"),
        }
    )

    def rows(indices: list[int]) -> datasets.Dataset:
        problems = [PROBLEMS[i] for i in indices]
        return datasets.Dataset.from_list(
            [
                {
                    "prompt": format_prompt(p),
                    "entry_point": p.entry_point,
                    "tests": list(p.tests),
                    "solution": p.solution,
                }
                for p in problems
            ],
            features=features,
        )

    return datasets.DatasetDict(
        {"train": rows(order[NUM_VALIDATION:]), "validation": rows(order[:NUM_VALIDATION])}
    )
