"""Chart-side helpers: the GPU catalog as the chart sees it, rendering the chart into objects,
KubeRay's own admission rules, and the kustomize tree generated from the chart."""
