//! Splice tests of the frame rules: message size limits, protocol errors and their close codes,
//! permessage-deflate frames passing through.

use tokio::io::AsyncWriteExt;

use super::*;

#[tokio::test]
async fn too_big_from_client() {
    let mut rig = start(cfg());
    let ok = cf(FIN | OP_TEXT, &[1; 10]);
    let part = cf(OP_BINARY, &[2; 600]);
    rig.client
        .write_all(&[ok.clone(), part.clone(), cf(FIN, &[3; 401])].concat())
        .await
        .unwrap();
    assert_eq!(
        read_n(&mut rig.backend, ok.len() + part.len()).await,
        [ok, part].concat()
    );
    assert_eq!(expect_close(&mut rig.client, false).await.0, 1009);
    assert_eq!(expect_close(&mut rig.backend, true).await.0, 1001);
    rig.backend
        .write_all(&bf(FIN | OP_CLOSE, &close_payload(1001, "")))
        .await
        .unwrap();
    expect_eof(&mut rig.backend).await;
    let out = outcome(rig).await;
    assert_eq!(out.end, SessionEnd::MessageTooBig { side: Side::Client });
}

#[tokio::test]
async fn too_big_from_backend() {
    let mut rig = start(cfg());
    rig.backend
        .write_all(&bf(FIN | OP_BINARY, &[1; 1001]))
        .await
        .unwrap();
    assert_eq!(expect_close(&mut rig.backend, true).await.0, 1009);
    assert_eq!(expect_close(&mut rig.client, false).await.0, 1011);
    rig.client
        .write_all(&cf(FIN | OP_CLOSE, &close_payload(1011, "")))
        .await
        .unwrap();
    expect_eof(&mut rig.client).await;
    let out = outcome(rig).await;
    assert_eq!(
        out.end,
        SessionEnd::MessageTooBig {
            side: Side::Backend
        }
    );
    assert!(!out.hard_closed);
}

#[tokio::test]
async fn protocol_errors_close_with_the_right_codes() {
    #[rustfmt::skip]
    let cases: Vec<(Side, Vec<u8>, &str)> = vec![
        (Side::Client, bf(FIN | OP_TEXT, b"unmasked"), "unmasked_frame"),
        (Side::Backend, cf(FIN | OP_TEXT, b"masked"), "masked_frame"),
        (Side::Client, cf(FIN | 3, b""), "reserved_opcode"),
        (Side::Backend, bf(FIN | 0x40 | OP_TEXT, b"z"), "unexpected_rsv1"),
        (Side::Client, cf(FIN | 0x20 | OP_TEXT, b""), "rsv2_rsv3"),
        (Side::Backend, bf(FIN | OP_PING, &[0; 126]), "control_too_long"),
        (Side::Client, cf(OP_PING, b""), "control_fragmented"),
        (Side::Backend, vec![0x82, 127, 0xff, 0, 0, 0, 0, 0, 0, 0], "length_top_bit"),
        (Side::Client, cf(FIN | OP_CONTINUATION, b"c"), "orphan_continuation"),
        (Side::Backend, [bf(OP_TEXT, b"a"), bf(FIN | OP_TEXT, b"b")].concat(), "data_inside_message"),
        (Side::Client, cf(FIN | OP_CLOSE, b"\x03"), "close_one_byte"),
    ];
    for (side, bytes, what) in cases {
        let mut rig = start(cfg());
        let (offender, other, other_code) = match side {
            Side::Client => (&mut rig.client, &mut rig.backend, 1001),
            Side::Backend => (&mut rig.backend, &mut rig.client, 1011),
        };
        offender.write_all(&bytes).await.unwrap();
        let (code, _) = expect_close(offender, side == Side::Backend).await;
        assert_eq!(code, 1002, "{what}");
        if what == "data_inside_message" {
            assert_eq!(read_n(other, 3).await, bf(OP_TEXT, b"a"), "{what}");
        }
        let (code, _) = expect_close(other, side == Side::Client).await;
        assert_eq!(code, other_code, "{what}");
        let reply = match side {
            Side::Client => bf(FIN | OP_CLOSE, &close_payload(other_code, "")),
            Side::Backend => cf(FIN | OP_CLOSE, &close_payload(other_code, "")),
        };
        other.write_all(&reply).await.unwrap();
        expect_eof(other).await;
        let out = outcome(rig).await;
        assert_eq!(out.end, SessionEnd::ProtocolError { side, what }, "{what}");
    }
}

#[tokio::test]
async fn deflate_frames_pass_through_untouched() {
    let mut rig = start(SpliceConfig {
        deflate: true,
        ..cfg()
    });
    // RSV1 on the first frame of a message (compressed payload is opaque to wsedge).
    let up = [
        cf(0x40 | OP_TEXT, &[0xf2, 0x48, 0x05]),
        cf(FIN | OP_CONTINUATION, &[0x00]),
    ]
    .concat();
    rig.client.write_all(&up).await.unwrap();
    assert_eq!(read_n(&mut rig.backend, up.len()).await, up);
    let down = bf(FIN | 0x40 | OP_BINARY, &[0xca, 0xc9, 0x07, 0x00]);
    rig.backend.write_all(&down).await.unwrap();
    assert_eq!(read_n(&mut rig.client, down.len()).await, down);
}
