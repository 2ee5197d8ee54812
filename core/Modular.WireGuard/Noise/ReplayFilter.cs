namespace Modular.WireGuard.Noise;

/// <summary>
/// The receive-side sliding window for transport counters (RFC 6479 style): a ring of 64-bit
/// blocks covering 2048 counters, of which 1984 behind the highest seen are accepted once.
/// Not thread-safe: callers hold the keypair's receive lock.
/// </summary>
internal sealed class ReplayFilter
{
    public const int WindowBits = 2048;
    private const int BlockBits = 64;
    private const int RingBlocks = WindowBits / BlockBits;
    private const int BlockMask = RingBlocks - 1;

    /// <summary>How far behind the highest counter a packet may still arrive (one block is kept free for the sliding edge).</summary>
    public const ulong WindowSize = (RingBlocks - 1) * BlockBits;

    /// <summary>REJECT_AFTER_MESSAGES: 2^64 - 2^13 - 1.</summary>
    public const ulong RejectAfterMessages = ulong.MaxValue - (1UL << 13);

    private readonly ulong[] _ring = new ulong[RingBlocks];
    private ulong _last;

    public void Reset()
    {
        _last = 0;
        Array.Clear(_ring);
    }

    /// <summary>Accepts <paramref name="counter"/> if it is new, inside the window and below <paramref name="limit"/>; records it.</summary>
    public bool Validate(ulong counter, ulong limit = RejectAfterMessages)
    {
        if (counter >= limit)
        {
            return false;
        }

        var block = counter / BlockBits;
        if (counter > _last)
        {
            var current = _last / BlockBits;
            var advance = Math.Min(block - current, RingBlocks);
            for (ulong i = 1; i <= advance; i++)
            {
                _ring[(int)((current + i) & BlockMask)] = 0;
            }

            _last = counter;
        }
        else if (_last - counter > WindowSize)
        {
            return false;
        }

        ref var slot = ref _ring[(int)(block & BlockMask)];
        var bit = 1UL << (int)(counter % BlockBits);
        if ((slot & bit) != 0)
        {
            return false;
        }

        slot |= bit;
        return true;
    }
}
