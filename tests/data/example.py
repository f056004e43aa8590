"""A tiny example the demo completes."""


def fibonacci(n: int) -> int:
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    

def main() -> None:
    print(fibonacci(10))
