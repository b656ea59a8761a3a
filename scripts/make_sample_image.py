"""Draw the built-in sample image (owlvit_cli/assets/sample.png): a small street scene.

The project ships its own picture instead of downloading one; it is non-square (so padding
matters) and has distinct objects (house, tree, car, sun) for the default queries.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 640, 448


def draw_scene() -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT))
    draw = ImageDraw.Draw(image)
    for y in range(HEIGHT):  # sky gradient, then grass
        t = y / HEIGHT
        color = (
            (int(110 + 90 * t), int(170 + 60 * t), 250) if y < 300 else (70, int(150 - 40 * t), 60)
        )
        draw.line([(0, y), (WIDTH, y)], fill=color)
    draw.ellipse([520, 30, 600, 110], fill=(255, 220, 80))  # sun
    draw.rectangle([80, 180, 280, 330], fill=(200, 170, 130), outline=(90, 60, 40), width=3)
    draw.polygon([(60, 185), (180, 100), (300, 185)], fill=(150, 50, 40))  # roof
    draw.rectangle([160, 250, 200, 330], fill=(100, 60, 30))  # door
    for x in (100, 220):
        draw.rectangle(
            [x, 205, x + 40, 240], fill=(170, 210, 240), outline=(255, 255, 255), width=3
        )
    draw.rectangle([430, 220, 450, 330], fill=(100, 70, 40))  # tree trunk
    draw.ellipse([375, 130, 505, 250], fill=(40, 120, 50))
    draw.rounded_rectangle([300, 330, 500, 390], radius=14, fill=(200, 30, 40))  # car body
    draw.polygon([(340, 330), (370, 295), (440, 295), (465, 330)], fill=(190, 30, 40))
    draw.polygon([(352, 328), (375, 302), (405, 302), (405, 328)], fill=(180, 220, 240))
    draw.polygon([(412, 328), (412, 302), (437, 302), (455, 328)], fill=(180, 220, 240))
    for x in (340, 460):
        draw.ellipse([x - 22, 370, x + 22, 414], fill=(25, 25, 25))
        draw.ellipse([x - 9, 383, x + 9, 401], fill=(170, 170, 170))
    draw.ellipse([540, 350, 600, 395], fill=(60, 60, 60))  # a cat: body, head, ears, tail
    draw.ellipse([580, 325, 615, 360], fill=(60, 60, 60))
    draw.polygon([(584, 333), (588, 315), (596, 330)], fill=(60, 60, 60))
    draw.polygon([(600, 330), (608, 314), (612, 333)], fill=(60, 60, 60))
    draw.line([(542, 372), (520, 345)], fill=(60, 60, 60), width=6)
    return image.filter(ImageFilter.SMOOTH)


def main() -> None:
    target = Path(__file__).resolve().parents[1] / "owlvit_cli" / "assets" / "sample.png"
    draw_scene().save(target, optimize=True)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
