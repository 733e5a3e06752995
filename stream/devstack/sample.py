"""Realistic Amplitude-style sample events for the local demo and the benchmark.

Users with stable devices, platforms and locations; sessions; commerce events
with revenue fields; a share of exact re-sends (same insert_id and device_id,
which dedupe must drop) and of invalid inputs (which must reach the dead-letter
topic). Seeded, so a run is reproducible.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

EVENT_TYPES = ["Page Viewed", "Button Clicked", "Product Viewed", "Product Added", "Checkout Started",
               "Order Completed", "Search Performed", "Signed Up", "Logged In", "Video Played", "Share Clicked",
               "Notification Opened", "Settings Changed"]
PLATFORMS = [("iOS", "ios", "17.4.1", "Apple", "iPhone15,2"), ("iOS", "ios", "16.7.2", "Apple", "iPhone14,5"),
             ("Android", "android", "14", "Google", "Pixel 8"), ("Android", "android", "13", "Samsung", "SM-S918B"),
             ("Web", "Chrome", "124", None, None), ("Web", "Safari", "17.4", None, None),
             ("Web", "Firefox", "125", None, None)]
PLACES = [("United States", "California", "San Francisco", "San Francisco-Oakland-San Jose, CA"),
          ("United States", "New York", "New York", "New York, NY"), ("Germany", "Berlin", "Berlin", None),
          ("France", "Ile-de-France", "Paris", None), ("India", "Karnataka", "Bengaluru", None),
          ("Brazil", "Sao Paulo", "Sao Paulo", None), ("Japan", "Tokyo", "Tokyo", None),
          ("United Kingdom", "England", "London", None)]
LANGUAGES = ["English", "German", "French", "Portuguese", "Japanese", "Hindi"]
CARRIERS = ["Verizon", "AT&T", "T-Mobile", "Vodafone", "Orange", "Jio", "NTT Docomo"]
PAGES = ["/", "/pricing", "/product/{}", "/category/{}", "/cart", "/checkout", "/search", "/account"]
PLANS = ["free", "starter", "pro", "enterprise"]
INVALID_KINDS = ["malformed_json", "not_an_object", "missing_event_type", "missing_id", "invalid_type",
                 "unknown_field", "empty_message"]


@dataclass(frozen=True)
class Sample:
    key: bytes | None
    value: bytes
    timestamp_ms: int
    kind: str  # "event", "duplicate" or the expected dead-letter reason


class SampleEvents:
    def __init__(self, seed: int = 7, users: int = 500, duplicate_rate: float = 0.03, invalid_rate: float = 0.01,
                 second_device_rate: float = 0.0):
        self.rnd = random.Random(seed)
        self.duplicate_rate, self.invalid_rate = duplicate_rate, invalid_rate
        r = self.rnd
        self.users = [(f"user-{r.getrandbits(32):08x}", str(uuid.UUID(int=r.getrandbits(128), version=4)),
                       r.choice(PLATFORMS), r.choice(PLACES), r.choice(LANGUAGES), r.choice(PLANS))
                      for _ in range(users)]
        # a share of users with a second device (a phone and a laptop): their ids are merged. Drawn from a random
        # generator of their own, so the events of a given seed stay the same whatever this rate is.
        self._devices = random.Random(seed + 1)
        self.second_devices = {u[0]: str(uuid.UUID(int=self._devices.getrandbits(128), version=4))
                               for u in self.users if self._devices.random() < second_device_rate}
        self.sessions: dict[str, int] = {}
        self.recent: list[tuple[bytes, bytes]] = []

    def event(self, t_ms: int) -> dict:
        r = self.rnd
        user_id, device_id, (platform, os_name, os_version, brand, model), place, lang, plan = r.choice(self.users)
        if user_id in self.second_devices and self._devices.random() < 0.5:
            device_id = self.second_devices[user_id]
        if device_id not in self.sessions or r.random() < 0.05:
            self.sessions[device_id] = t_ms
        et = r.choice(EVENT_TYPES)
        ev: dict = {
            "event_type": et, "device_id": device_id, "time": t_ms - r.randint(0, 3000),
            "insert_id": str(uuid.UUID(int=r.getrandbits(128), version=4)),
            "session_id": self.sessions[device_id], "event_id": r.randint(1, 5000),
            "platform": platform, "os_name": os_name, "os_version": os_version,
            "country": place[0], "region": place[1], "city": place[2], "language": lang,
            "app_version": f"{r.randint(1, 4)}.{r.randint(0, 20)}.{r.randint(0, 9)}",
            "ip": f"{r.randint(11, 223)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
            "library": "amplitude-ts/2.7.4",
            "event_properties": {"page": r.choice(PAGES).format(r.randint(1, 999)),
                                 "referrer": r.choice(["https://www.google.com/", "", "https://t.co/"]),
                                 "experiment": r.choice(["control", "treatment"])},
            "user_properties": {"plan": plan, "beta": r.random() < 0.1},
        }
        if r.random() > 0.15:  # most events come from identified users
            ev["user_id"] = user_id
        if place[3]:
            ev["dma"] = place[3]
        if brand:
            ev["device_brand"], ev["device_manufacturer"], ev["device_model"] = brand, brand, model
            ev["carrier"] = r.choice(CARRIERS)
        if et == "Order Completed":
            ev.update(price=round(r.uniform(5, 300), 2), quantity=r.randint(1, 3), productId=f"sku-{r.randint(1, 999)}",
                      revenueType="purchase", currency="USD")
        return ev

    def invalid(self, kind: str, t_ms: int) -> bytes:
        good = self.event(t_ms)
        if kind == "malformed_json":
            return orjson.dumps(good)[:-7]
        if kind == "not_an_object":
            return b'["Page Viewed", "user-1"]'
        if kind == "missing_event_type":
            good.pop("event_type")
        elif kind == "missing_id":
            good.pop("device_id")
            good.pop("user_id", None)
        elif kind == "invalid_type":
            good["time"] = "yesterday"
        elif kind == "unknown_field":
            good["event_tpye"] = good["event_type"]
        elif kind == "empty_message":
            return b""
        return orjson.dumps(good)

    def stream(self, start_ms: int, end_ms: int, count: int) -> Iterator[Sample]:
        """``count`` inputs stamped evenly between ``start_ms`` and ``end_ms``."""
        r = self.rnd
        step = (end_ms - start_ms) / max(count, 1)
        for i in range(count):
            t = int(start_ms + i * step)
            x = r.random()
            if x < self.invalid_rate:
                kind = r.choice(INVALID_KINDS)
                yield Sample(None, self.invalid(kind, t), t, kind)
            elif x < self.invalid_rate + self.duplicate_rate and self.recent:
                key, value = r.choice(self.recent)
                yield Sample(key, value, t, "duplicate")
            else:
                ev = self.event(t)
                key, value = ev["device_id"].encode(), orjson.dumps(ev)
                self.recent.append((key, value))
                if len(self.recent) > 2000:
                    self.recent.pop(0)
                yield Sample(key, value, t, "event")
