"""What `invoke images` and run.json say about images: the built ones with their labels, and every image the
pins describe with its tag if built."""

from __future__ import annotations

from toolbox.build.images import find_image
from toolbox.build.pins import LABEL_PREFIX, load_pins
from toolbox.engine.client import docker_client
from toolbox.settings import Settings


def image_info(client, ref: str) -> dict:
    """What run.json records about an image: tag, id, repo digests, labels, size."""
    image = client.images.get(ref)
    return {
        "tag": ref,
        "id": image.id,
        "repo_digests": image.attrs.get("RepoDigests", []),
        "labels": image.labels,
        "size": image.attrs.get("Size"),
        "created": image.attrs.get("Created"),
    }


def list_images(settings: Settings) -> list[dict]:
    """Every toolbox image here (side variants too), newest first; `current`: what bench uses for its name."""
    client = docker_client()
    pins = load_pins(settings.pins_file)
    found = client.images.list(filters={"label": f"{LABEL_PREFIX}.backend"})
    sides = {i.labels.get(f"{LABEL_PREFIX}.image") for i in found if i.labels.get(f"{LABEL_PREFIX}.llama-source") == "side"}
    current = {find_image(settings, b, client) for b in [*pins.image_names(), *sorted(sides - {None})]}
    rows = []
    for image in found:
        labels = image.labels
        for t in image.tags or ["<untagged>"]:
            rows.append(
                {
                    "tag": t,
                    "backend": labels.get(f"{LABEL_PREFIX}.backend"),
                    "image": labels.get(f"{LABEL_PREFIX}.image"),
                    "llama_commit": labels.get(f"{LABEL_PREFIX}.llama-commit", ""),
                    "side": labels.get(f"{LABEL_PREFIX}.llama-source") == "side",
                    "build_number": labels.get(f"{LABEL_PREFIX}.llama-build-number"),
                    "mesa": labels.get(f"{LABEL_PREFIX}.mesa-version"),
                    "rocm": labels.get(f"{LABEL_PREFIX}.rocm-version"),
                    "verified": labels.get(f"{LABEL_PREFIX}.verified"),
                    "size_mb": round(image.attrs.get("Size", 0) / 1e6),
                    "created": image.attrs.get("Created", "")[:19],
                    "current": t in current,
                }
            )
    return sorted(rows, key=lambda r: r["created"], reverse=True)


def pinned_images(settings: Settings) -> list[dict]:
    """Every image the pins describe (backends and their variants) with its pinned versions and its tag if built."""
    client = docker_client()
    pins = load_pins(settings.pins_file)
    out = []
    for name in pins.image_names():
        b = pins.backend(name)
        rp = b.runtime_packages
        out.append(
            {
                "image": name,
                "description": b.description,
                "offline": b.offline_capable,
                "mesa": rp.get("mesa-vulkan-drivers"),
                "rocm": b.rocm_version,
                "runs_as": b.variant_of or name.partition(":")[0],
                "built": find_image(settings, name, client),
            }
        )
    return out
