"""Load for the compose-app example: people browsing the home page and item pages.

locust -f examples/compose-app/locustfile.py --host http://127.0.0.1:<lb port>
"""

import random

from locust import HttpUser, between, task


class Shopper(HttpUser):
    wait_time = between(0.5, 1.5)

    @task(1)
    def home(self) -> None:
        self.client.get("/")

    @task(3)
    def item(self) -> None:
        n = random.randint(1, 10_000)
        self.client.get(f"/items/{n}", name="/items/[n]")
