"""Database work from async code that is not a request."""

from asgiref.sync import sync_to_async


def db_work(function):
    """Run one unit of database work in a worker thread.

    Not thread-sensitive: generation runs and connection bookkeeping are not
    tied to a request, and serialising them all through one thread would cap
    throughput. Each worker thread keeps its own database connection.
    """
    return sync_to_async(function, thread_sensitive=False)
