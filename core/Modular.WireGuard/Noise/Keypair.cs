using NSec.Cryptography;
using Modular.WireGuard.Crypto;

namespace Modular.WireGuard.Noise;

/// <summary>
/// One session's transport keys with their counters. The NSec keys are imported once and reused
/// for every packet. Sending counters are taken atomically; the replay filter is guarded by its own lock.
/// </summary>
internal sealed class Keypair : IDisposable
{
    private readonly Key _sendKey;
    private readonly Key _receiveKey;
    private readonly Lock _replayLock = new();
    private readonly ReplayFilter _replay = new();
    private long _sendCounter = -1;
    private int _disposed;

    public Keypair(SessionKeys keys, long created)
    {
        _sendKey = Aead.ImportChaCha(keys.Send);
        _receiveKey = Aead.ImportChaCha(keys.Receive);
        keys.Send.AsSpan().Clear();
        keys.Receive.AsSpan().Clear();
        IsInitiator = keys.IsInitiator;
        LocalIndex = keys.LocalIndex;
        RemoteIndex = keys.RemoteIndex;
        Created = created;
    }

    public bool IsInitiator { get; }

    public uint LocalIndex { get; }

    public uint RemoteIndex { get; }

    /// <summary>TimeProvider timestamp of the handshake that made it.</summary>
    public long Created { get; }

    public bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>How many counters have been handed out (the next counter to use).</summary>
    public ulong SendCount => (ulong)(Volatile.Read(ref _sendCounter) + 1);

    /// <summary>For tests: jumps the sending counter so message limits can be reached.</summary>
    internal void SkipSendCountersTo(ulong next) => Interlocked.Exchange(ref _sendCounter, (long)(next - 1));

    /// <summary>Reserves the next sending counter; false once REJECT_AFTER_MESSAGES is reached.</summary>
    public bool TryNextCounter(out ulong counter)
    {
        counter = (ulong)Interlocked.Increment(ref _sendCounter);
        return counter < ReplayFilter.RejectAfterMessages;
    }

    /// <summary>Encrypts in place. False if the keypair was zeroed meanwhile.</summary>
    public bool Seal(ulong counter, ReadOnlySpan<byte> plaintext, Span<byte> ciphertext)
    {
        try
        {
            Aead.Seal(_sendKey, counter, plaintext, ReadOnlySpan<byte>.Empty, ciphertext);
            return true;
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
    }

    /// <summary>Authenticates and decrypts; does not touch the replay window.</summary>
    public bool Open(ulong counter, ReadOnlySpan<byte> ciphertext, Span<byte> plaintext)
    {
        try
        {
            return Aead.Open(_receiveKey, counter, ciphertext, ReadOnlySpan<byte>.Empty, plaintext);
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
    }

    /// <summary>Records an authenticated counter; false for a replay or one too old.</summary>
    public bool AcceptCounter(ulong counter)
    {
        lock (_replayLock)
        {
            return _replay.Validate(counter);
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _sendKey.Dispose();
            _receiveKey.Dispose();
        }
    }
}
