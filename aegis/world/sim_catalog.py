"""The designers' fixed content of every shard: zones, quests, items and baseline rates.

These are constants of the game build, not tunables: the tunables are
:class:`aegis.domain.WorldParams`, which scale the baselines here. Keeping them
in one module lets docs/world.md and the tests name the same numbers.
"""

from __future__ import annotations

import numpy as np

from aegis.domain import N_STAGES, N_ZONES

# ------------------------------------------------------------------- population
MAX_LEVEL = 60
LEVELS_PER_ZONE = MAX_LEVEL // N_ZONES
START_GOLD = 100
SKILL_CAP = 2.5
SKILL_PER_STAGE = 0.003
ARRIVAL_RATE_PER_MIN = 0.02  # a vacant population slot fills after ~50 game minutes on average
NEW_ENGAGEMENT = (0.55, 0.90)  # uniform range for a new player's engagement
OFFLINE_ENGAGEMENT_TARGET = 0.55
OFFLINE_ENGAGEMENT_RATE = 0.0005  # per minute, drift of an offline player's engagement to the target
ONLINE_BOREDOM = 0.0003  # per online minute

# ----------------------------------------------------------------------- sessions
LOGIN_RATE_PER_MIN = 0.0105  # x engagement x diurnal x map-event boost
MEAN_SESSION_MIN = 45.0
DISCONNECT_RATE_PER_MIN = 0.0015  # x (1 + (tick_ms / DISCONNECT_TICK_MS)^2)
DISCONNECT_TICK_MS = 250.0
RECONNECT_RATE_PER_MIN = 0.35
RECONNECT_WINDOW_MIN = 10.0  # a disconnected player who is not back by then has ended the session
CRASH_RECONNECT_WINDOW_MIN = 20.0
CHURN_BASE = 0.01  # P(churn | session end) = CHURN_BASE + CHURN_SLOPE * (1 - engagement)^3
CHURN_SLOPE = 0.6
# Local peak hour of play is 20:00; offsets from UTC per region.
REGION_UTC_OFFSET_H: dict[str, float] = {"eu-west": 0.0, "us-east": -5.0, "ap-southeast": 8.0}
DIURNAL_AMPLITUDE = 0.45
PEAK_LOCAL_HOUR = 20.0

# ----------------------------------------------------------------------- quests
QUESTS_PER_ZONE = 10
N_QUESTS = QUESTS_PER_ZONE * N_ZONES  # quest_id = zone + N_ZONES * k
QUEST_START_RATE_PER_MIN = 0.2
STAGE_BASE_DIFFICULTY = np.array([0.80, 0.90, 1.00, 1.12, 1.25])  # later stages are harder by design
STAGE_MINUTES = np.array([4.0, 5.0, 6.0, 6.0, 7.0])
assert len(STAGE_BASE_DIFFICULTY) == len(STAGE_MINUTES) == N_STAGES
GRIND_DIFFICULTY = 0.85  # difficulty of open-world play outside quests
ABANDON_RATE_PER_MIN = 0.006  # x exp(ABANDON_GAP_K * gap) x pacing^0.7 x (1 + 0.6 deaths this stage)
ABANDON_GAP_K = 2.0
ABANDON_PER_DEATH = 0.6
STAGE_SLOWDOWN_PER_GAP = 0.5
QUEST_REWARD_GOLD = np.array([20.0, 30.0, 42.0, 57.0, 75.0, 95.0])  # by zone
QUEST_GEM_CHANCE = 0.25

# Per-quest difficulty of the catalog, fixed for the game build (not seeded per shard).
QUEST_BASE_DIFFICULTY = np.round(np.random.default_rng(20260101).uniform(0.85, 1.15, N_QUESTS), 3)

# ------------------------------------------------------------------ zones/combat
# Zones lie on a 3 x 2 grid of the 1024 x 1024 map; deaths cluster at 3 hotspots per zone.
ZONE_BASE_DEATH_PER_MIN = np.array([0.006, 0.008, 0.010, 0.012, 0.014, 0.017])
DEATH_GAP_K = 1.6  # death hazard x exp(DEATH_GAP_K * (difficulty - skill))
AGGRESSION_EXPONENT = 0.8
ELITE_DEATH_FACTOR = 2.0  # hazard x (1 + ELITE_DEATH_FACTOR * elite_share)
SPAWN_DEATH_EXPONENT = 0.5
PVP_SHARE_BY_ZONE = np.array([0.0, 0.02, 0.05, 0.08, 0.12, 0.15])
FALL_SHARE = 0.05
_ZONE_ORIGIN = np.array(
    [[0.0, 0.0], [341.0, 0.0], [682.0, 0.0], [0.0, 512.0], [341.0, 512.0], [682.0, 512.0]]
)
_HOT = np.random.default_rng(20260102).uniform([60.0, 80.0], [280.0, 430.0], size=(N_ZONES, 3, 2))
ZONE_HOTSPOTS = (_ZONE_ORIGIN[:, None, :] + _HOT).astype(np.float32)  # (zone, hotspot, xy)
HOTSPOT_SPREAD = 60.0

# ---------------------------------------------------------------------- loot/items
ITEMS_PER_ZONE = 8  # item_id = zone * ITEMS_PER_ZONE + rarity (0 common .. 7 rare)
N_ITEMS = ITEMS_PER_ZONE * N_ZONES
ITEM_VALUE = np.array(
    [(20.0 + 30.0 * z) * (1.0 + 0.6 * r) ** 1.6 for z in range(N_ZONES) for r in range(ITEMS_PER_ZONE)]
)
DROP_RATE_PER_MIN = 0.08  # x drop_rate x spawn_rate^0.7 (x MAP_EVENT_DROP_BOOST in the event zone)
SPAWN_DROP_EXPONENT = 0.7
RARITY_EXPONENT = 2.2  # rarity = floor(ITEMS_PER_ZONE * u^RARITY_EXPONENT)

# ------------------------------------------------------------------------ economy
LOOT_GOLD_RATE_PER_MIN = 0.12  # x spawn_rate^0.5
LOOT_GOLD = np.array([3.0, 5.0, 8.0, 11.0, 15.0, 20.0])  # mean amount by zone, x source_multiplier
VENDOR_SELL_RATE_PER_MIN = 0.03
VENDOR_SELL_SHARE = 0.15  # a vendor pays this share of item value, x source_multiplier
VENDOR_BUY_RATE_PER_MIN = 0.06
VENDOR_COST = np.array([12.0, 18.0, 27.0, 36.0, 48.0, 63.0])  # consumables, x sink_multiplier
REPAIR_COST = np.array([6.0, 12.0, 20.0, 30.0, 42.0, 56.0])  # per death, x sink_multiplier
FEE_RATE_PER_MIN = 0.03
TRAVEL_FEE = np.array([5.0, 8.0, 13.0, 19.0, 25.0, 32.0])
TRADE_RATE_PER_MIN = 0.025
TRADE_TAX = 0.08  # of the price, paid by the seller, x sink_multiplier
GEM_PURCHASE_RATE_PER_MIN = 0.0015
GEM_PURCHASE_PACKS = np.array([100, 100, 500])
GEM_SHOP_RATE_PER_MIN = 0.004
GEM_SHOP_COSTS = np.array([20, 50, 80])
# Price formation: level -> (money per active player / reference)^PRICE_MONEY_ELASTICITY,
# item factor (reference stock / stock)^PRICE_SCARCITY_ELASTICITY; the level adjusts with
# time constant PRICE_ADJUST_MIN (prices are sticky).
PRICE_MONEY_ELASTICITY = 0.85
PRICE_SCARCITY_ELASTICITY = 0.3
PRICE_ADJUST_MIN = 30.0
SCARCITY_CLIP = (0.5, 3.0)

# ---------------------------------------------------------------------- map events
MAP_EVENT_MINUTES = 45.0
MAP_EVENT_LOGIN_BOOST = 1.6
MAP_EVENT_DROP_BOOST = 1.5
MAP_EVENT_TRADE_BOOST = 1.5

# ------------------------------------------------------------------- load/latency
DEFAULT_CAPACITY_SHARE = 0.4  # capacity = share x population slots unless given
TICK_BASE_MS = 20.0
RHO_MAX = 0.97  # queueing factor 1 / (1 - min(rho, RHO_MAX)) is bounded at ~33x
TICK_NOISE_SIGMA = 0.15
TICK_MS_MAX = 60_000.0
LAG_ENGAGEMENT_MS = 200.0  # online players lose engagement while ticks are slower than this
LAG_ENGAGEMENT_PER_MIN = 0.002

# ------------------------------------------------------------------ engagement deltas
ENG_STAGE = 0.005
ENG_QUEST = 0.03
ENG_DROP = 0.001
ENG_DEATH = -0.03
ENG_ABANDON = -0.05

# ------------------------------------------------------------------------- faults
EXPLOIT_RATE_PER_MIN = 0.004  # x magnitude: share of online players exploiting per minute
EXPLOIT_GOLD = 400.0  # duplicated gold sold per exploit, x magnitude
EXPLOIT_ITEMS = 3
