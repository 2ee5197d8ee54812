namespace Modular.Plugins.Rosenpass;

/// <summary>
/// The Rosenpass protocol engine as the provider drives it: one object per agent that holds this agent's static keys,
/// the peers' static keys and every handshake's state, and turns datagrams into replies and output keys. It mirrors
/// the protocol library's API (upstream's CryptoServer), so the provider is tested against an in-memory fake and the
/// real implementation is adapted to it.
/// </summary>
/// <remarks>Not thread-safe: the provider calls it under its own lock.</remarks>
internal interface IKeyExchange
{
    /// <summary>Adds a peer by its Rosenpass public key (and the optional PSK Rosenpass mixes in); returns its handle.</summary>
    int AddPeer(byte[] peerPublicKey, byte[]? presharedKey);

    /// <summary>Forgets a peer and its handshakes.</summary>
    void RemovePeer(int peer);

    /// <summary>Writes an InitHello for <paramref name="peer"/> into <paramref name="output"/>; returns its length.</summary>
    int InitiateHandshake(int peer, Span<byte> output);

    /// <summary>
    /// Processes one received datagram: writes the reply (if any) into <paramref name="output"/> and says whether an
    /// exchange with a peer completed (then <see cref="OutputKey"/> has its new key). Throws on a message it rejects.
    /// </summary>
    KeyExchangeResult HandleMessage(ReadOnlySpan<byte> input, Span<byte> output);

    /// <summary>The latest output key (the WireGuard PSK, 32 bytes) exchanged with <paramref name="peer"/>.</summary>
    byte[] OutputKey(int peer);

    /// <summary>What the timers want next: an initiation, a retransmission, a key to drop, or sleep.</summary>
    PollResult Poll();

    /// <summary>Writes the retransmission of the handshake in flight with <paramref name="peer"/>; returns its length.</summary>
    int RetransmitHandshake(int peer, Span<byte> output);
}

/// <summary>The outcome of <see cref="IKeyExchange.HandleMessage"/>.</summary>
/// <param name="ExchangedWith">The peer whose exchange just completed; null when none did.</param>
/// <param name="ResponseLength">Bytes of reply written to the output (0: nothing to send).</param>
internal readonly record struct KeyExchangeResult(int? ExchangedWith, int ResponseLength);

/// <summary>What <see cref="IKeyExchange.Poll"/> asks for.</summary>
internal enum PollAction
{
    /// <summary>Nothing to do for <see cref="PollResult.Wait"/>.</summary>
    Sleep,

    /// <summary>Start a handshake with <see cref="PollResult.Peer"/> (the provider does only when it is the initiator).</summary>
    SendInitiation,

    /// <summary>Send the handshake in flight with <see cref="PollResult.Peer"/> again.</summary>
    SendRetransmission,

    /// <summary>The key with <see cref="PollResult.Peer"/> expired without a fresh one.</summary>
    DeleteKey,
}

/// <summary>One answer of <see cref="IKeyExchange.Poll"/>.</summary>
internal readonly record struct PollResult(PollAction Action, int Peer, TimeSpan Wait)
{
    public static PollResult Sleep(TimeSpan wait) => new(PollAction.Sleep, -1, wait);
}
