using Modular.Core.Firewall.Nftables;

namespace Modular.Core.Tests.Firewall.Nftables;

/// <summary>conntrack in memory: flows are only their marks; records every clear, fails on demand.</summary>
internal sealed class FakeConntrack : IConntrack
{
    private readonly Lock _lock = new();

    /// <summary>Each flow's conntrack mark, by a name the test gives it.</summary>
    public Dictionary<string, uint> Marks { get; } = new(StringComparer.Ordinal);

    /// <summary>Every (value, mask) cleared, in order.</summary>
    public List<(uint Value, uint Mask)> Cleared { get; } = [];

    /// <summary>When set, every clear fails with this message.</summary>
    public string? FailWith { get; set; }

    public Task<int> ClearMarksAsync(uint value, uint mask, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (FailWith is { } message)
            {
                throw new IOException(message);
            }

            Cleared.Add((value, mask));
            var changed = 0;
            foreach (var flow in Marks.Keys.ToList())
            {
                if ((Marks[flow] & mask) == value)
                {
                    Marks[flow] &= ~mask;
                    changed++;
                }
            }

            return Task.FromResult(changed);
        }
    }
}
