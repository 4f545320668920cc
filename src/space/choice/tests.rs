use super::*;

#[test]
fn canonical_strings_round_trip() {
    for s in [
        "f32",
        "f16",
        "bf16",
        "int8-sym-channel",
        "int4-asym-g32",
        "int2-sym-tensor",
        "int4-asym-g32+2:4+rank50",
        "int8-sym-channel+act8-static",
        "f16+act8-dynamic+sparse50+rank25",
        "int6-asym-g128+channels25",
        "f32+4:8",
        "q4_k",
        "q2_k+rank50",
        "q8_0+channels25+rank10",
        "q5_1",
        "f32+tucker50",
        "f16+cp25",
        "int8-sym-channel+act8-dynamic+tucker10",
        "bf16+cp1",
    ] {
        let c: Choice = s.parse().unwrap();
        assert_eq!(c.to_string(), s);
    }
}

#[test]
fn errors_point_at_the_bad_part() {
    let e = "int4-asym-g32+2:5x".parse::<Choice>().unwrap_err();
    match e {
        Error::Choice { offset, .. } => assert_eq!(offset, 14),
        other => panic!("{other}"),
    }
    let e = "int9-sym-channel".parse::<Choice>().unwrap_err();
    assert!(e.to_string().contains("2..=8"), "{e}");
    match e {
        Error::Choice { offset, .. } => assert_eq!(offset, 3),
        other => panic!("{other}"),
    }
    let e = "int4-foo-g32".parse::<Choice>().unwrap_err();
    assert!(e.to_string().contains("sym, asym"), "{e}");
}

#[test]
fn each_part_parses_what_it_prints() {
    for s in ["f32", "bf16", "int3-asym-tensor", "int8-sym-g128"] {
        assert_eq!(s.parse::<WeightQuant>().unwrap().to_string(), s);
    }
    for s in ["sym", "asym"] {
        assert_eq!(s.parse::<QuantScheme>().unwrap().to_string(), s);
    }
    for s in ["tensor", "channel", "g32"] {
        assert_eq!(s.parse::<Granularity>().unwrap().to_string(), s);
    }
    for s in ["none", "act8-static", "act8-dynamic"] {
        assert_eq!(s.parse::<ActQuant>().unwrap().to_string(), s);
    }
    for s in ["dense", "sparse50", "2:4", "channels25"] {
        assert_eq!(s.parse::<Sparsity>().unwrap().to_string(), s);
    }
    for s in [
        "g1",
        "int4-sym-g1",
        "sparse0",
        "4:4",
        "act8",
        "dense+2:4",
        "channel+2:4",
    ] {
        assert!(
            s.parse::<Granularity>().is_err()
                && s.parse::<WeightQuant>().is_err()
                && s.parse::<Sparsity>().is_err()
                && s.parse::<ActQuant>().is_err(),
            "{s:?} was accepted by a part"
        );
    }
}

#[test]
fn a_part_error_points_into_the_whole_choice() {
    // The granularity is the third field of the weights: offset 10 in the choice.
    match "int4-asym-g1+2:4".parse::<Choice>().unwrap_err() {
        Error::Choice { offset, marker, .. } => {
            assert_eq!(offset, 10);
            assert_eq!(marker, format!("{}^^", " ".repeat(10)));
        }
        other => panic!("{other}"),
    }
    // The same granularity on its own points at its own start.
    match "g1".parse::<Granularity>().unwrap_err() {
        Error::Choice { offset, .. } => assert_eq!(offset, 0),
        other => panic!("{other}"),
    }
    // `none` and `dense` are how parts print their absence, not parts of a choice.
    for s in ["f32+none", "f32+dense"] {
        let e = s.parse::<Choice>().unwrap_err();
        assert!(e.to_string().contains("unknown part"), "{s}: {e}");
    }
}

#[test]
fn ggml_formats_know_their_blocks_and_refuse_parts_they_do_not_take() {
    for g in GgmlFormat::ALL {
        assert_eq!(g.name().parse::<GgmlFormat>().unwrap(), g);
        assert_eq!(
            g.to_string().parse::<WeightQuant>().unwrap(),
            WeightQuant::Ggml(g)
        );
        assert!(!WeightQuant::Ggml(g).is_float());
    }
    // llama.cpp's accounting: Q4_K 144 bytes per 256 weights = 4.5 bits per weight.
    assert_eq!(GgmlFormat::Q4K.bits_per_weight(), 4.5);
    assert_eq!(GgmlFormat::Q8_0.bits_per_weight(), 8.5);
    assert_eq!(GgmlFormat::Q6K.bits_per_weight(), 6.5625);
    assert_eq!(GgmlFormat::Q2K.bits_per_weight(), 2.625);
    assert!(GgmlFormat::Q4K
        .misfit(384)
        .unwrap()
        .contains("multiple of 256"));
    assert!(GgmlFormat::Q4K.misfit(768).is_none());
    assert!(GgmlFormat::Q5_0.misfit(96).unwrap().contains("in pairs"));
    assert!(GgmlFormat::Q8_0.misfit(96).is_none());
    for (s, at, says) in [
        ("q4_k+act8-dynamic", 5, "quantizes its activations itself"),
        ("q4_0+2:4", 5, "stores every weight"),
        ("q4_0+sparse50+rank50", 5, "stores every weight"),
    ] {
        match s.parse::<Choice>().unwrap_err() {
            e @ Error::Choice { offset, .. } => {
                assert_eq!(offset, at, "{s}");
                assert!(e.to_string().contains(says), "{s}: {e}");
            }
            other => panic!("{other}"),
        }
    }
    for s in ["Q4_K", "q4k", "q4_k-sym-channel", "q8_1", "q8_k"] {
        assert!(s.parse::<Choice>().is_err(), "{s:?} was accepted");
    }
}

#[test]
fn convolution_factorizations_refuse_what_they_do_not_combine_with() {
    for (s, at, says) in [
        ("f32+2:4+tucker50", 8, "no sparsity part"),
        ("f32+channels25+cp50", 15, "no sparsity part"),
        ("q4_k+tucker50", 5, "not a GGML block format"),
        ("f32+rank50+cp50", 11, "a second rank"),
    ] {
        match s.parse::<Choice>().unwrap_err() {
            e @ Error::Choice { offset, .. } => {
                assert_eq!(offset, at, "{s}: {e}");
                assert!(e.to_string().contains(says), "{s}: {e}");
            }
            other => panic!("{other}"),
        }
    }
    let c: Choice = "f16+tucker25".parse().unwrap();
    assert_eq!((c.conv, c.rank), (Some(ConvFactor::Tucker(25)), None::<u8>));
    let conv = |shape: Vec<usize>, kind| LayerInfo {
        name: "x".into(),
        kind,
        shape,
        macs: 0,
        bias: true,
    };
    let linear = conv(vec![32, 64], super::super::LayerKind::Linear);
    assert!(c.layer_misfit(&linear).unwrap().contains("linear layer"));
    let k3 = conv(vec![32, 16, 3, 3], super::super::LayerKind::Conv2d);
    assert!(c.layer_misfit(&k3).is_none());
    let k1 = conv(vec![32, 16, 1, 1], super::super::LayerKind::Conv2d);
    assert!(c.layer_misfit(&k1).unwrap().contains("1×1"));
}

#[test]
fn non_canonical_spellings_are_refused() {
    for s in [
        "",
        "F32",
        "int8-sym-channel+rank50+2:4",
        "int8-sym-channel+sparse0",
        "int8-sym-channel+rank100",
        "int8-sym-channel+sparse50+2:4",
        "int08-sym-channel",
        "int4-sym-g032",
        "f32+4:4",
        "f32+0:4",
        "f32+",
        "int4-sym",
        "int4-sym-g1",
        "f32+act8-static+act8-dynamic",
        "f32+rank50+tucker50",
        "f32+tucker50+cp50",
        "f32+tucker0",
        "f32+cp100",
        "f32+tucker",
        "f32+tucker50+act8-static",
    ] {
        assert!(s.parse::<Choice>().is_err(), "{s:?} was accepted");
    }
}
