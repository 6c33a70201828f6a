"""The names of fusionkit's Ray actors and their namespace: one leaf module that every
actor and client imports, so no one has to import the actor classes to find an actor."""

NAMESPACE = "fusionkit"
CONTROLLER = "fusionkit-controller"
MONITOR = "fusionkit-monitor"
REGISTRY = "fusionkit-registry"
