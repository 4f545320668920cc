//! The PNG backend: plotters' bitmap backend with text drawn glyph by glyph at the font's own
//! positions. plotters 0.3.7's `ab_glyph` renderer places each glyph's bitmap at the pen position
//! without the glyph's side bearing (so "latency" prints as "l at ency") and puts the baseline at
//! half the font size; here every glyph sits at pen + bearing on a baseline at the font's ascent.
//! Text widths (plotters' layout) are unchanged: advances and kerning are the same.

use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use plotters::backend::BitMapBackend;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
    FontStyle,
};

use super::{BOLD, REGULAR};

/// The embedded font of a style (bold, or regular for everything else).
fn font(style: FontStyle) -> Option<&'static FontRef<'static>> {
    static FONTS: OnceLock<Option<(FontRef<'static>, FontRef<'static>)>> = OnceLock::new();
    let fonts = FONTS.get_or_init(|| {
        Some((
            FontRef::try_from_slice(REGULAR).ok()?,
            FontRef::try_from_slice(BOLD).ok()?,
        ))
    });
    fonts.as_ref().map(|(regular, bold)| match style {
        FontStyle::Bold => bold,
        _ => regular,
    })
}

/// A bitmap backend that draws text with correct glyph positions.
pub struct Png<'a>(pub BitMapBackend<'a>);

type BackendError<'a> = DrawingErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>;

impl<'a> DrawingBackend for Png<'a> {
    type ErrorType = <BitMapBackend<'a> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), BackendError<'a>> {
        self.0.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), BackendError<'a>> {
        self.0.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), BackendError<'a>> {
        self.0.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), BackendError<'a>> {
        self.0.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), BackendError<'a>> {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), BackendError<'a>> {
        self.0.blit_bitmap(pos, size, src)
    }

    fn draw_text<TStyle: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &TStyle,
        pos: BackendCoord,
    ) -> Result<(), BackendError<'a>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let Some(font) = font(style.style()) else {
            return self.0.draw_text(text, style, pos);
        };
        let ((min_x, min_y), (max_x, max_y)) = style
            .layout_box(text)
            .map_err(|e| DrawingErrorKind::FontError(Box::new(e)))?;
        let (width, height) = (max_x - min_x, max_y - min_y);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let scaled = font.as_scaled(PxScale::from(style.size() as f32));
        // The text box is `height` tall; centre the capitals in it.
        let baseline = (height as f32 + scaled.ascent() * 0.78) / 2.0;
        let trans = style.transform();
        let (w, h) = self.get_size();
        let mut pen = 0.0f32;
        let mut prev = None;
        for c in text.chars() {
            let id = scaled.glyph_id(c);
            if let Some(p) = prev {
                pen += scaled.kern(p, id);
            }
            prev = Some(id);
            let glyph = id.with_scale_and_position(scaled.scale(), point(pen, baseline));
            pen += scaled.h_advance(id);
            let Some(outline) = font.outline_glyph(glyph) else {
                continue;
            };
            let b = outline.px_bounds();
            let mut pixels = Vec::new();
            outline.draw(|x, y, cover| pixels.push((x, y, cover)));
            for (x, y, cover) in pixels {
                let lx = b.min.x as i32 + x as i32 + dx;
                let ly = b.min.y as i32 + y as i32 + dy;
                let (tx, ty) = trans.transform(lx, ly);
                let (px, py) = (pos.0 + tx, pos.1 + ty);
                if px >= 0 && px < w as i32 && py >= 0 && py < h as i32 {
                    let c = BackendColor {
                        alpha: color.alpha * f64::from(cover.min(1.0)),
                        rgb: color.rgb,
                    };
                    self.0.draw_pixel((px, py), c)?;
                }
            }
        }
        Ok(())
    }
}
