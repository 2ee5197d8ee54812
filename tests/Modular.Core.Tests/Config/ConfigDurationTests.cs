using Modular.Abstractions.Config;

namespace Modular.Core.Tests.Config;

public sealed class ConfigDurationTests
{
    [Theory]
    [InlineData("90s", 90_000)]
    [InlineData("15m", 900_000)]
    [InlineData("1h30m", 5_400_000)]
    [InlineData("250ms", 250)]
    [InlineData("1.5h", 5_400_000)]
    [InlineData("2d", 172_800_000)]
    [InlineData(" 1m ", 60_000)]
    [InlineData("24h", 86_400_000)]
    [InlineData("7d", 604_800_000)]
    [InlineData("0", 0)]
    public void Parses(string text, long milliseconds)
    {
        Assert.True(ConfigDuration.TryParse(text, out var duration));
        Assert.Equal(TimeSpan.FromMilliseconds(milliseconds), duration);
    }

    [Theory]
    [InlineData("")]
    [InlineData("15")]
    [InlineData("m")]
    [InlineData("15 m")]
    [InlineData("15x")]
    [InlineData("h")]
    [InlineData("-5m")]
    [InlineData("-5s")]
    [InlineData("1..5s")]
    [InlineData(null)]
    public void Rejects(string? text) => Assert.False(ConfigDuration.TryParse(text, out _));

    [Theory]
    [InlineData(5_400_000, "1h30m")]
    [InlineData(90_000, "1m30s")]
    [InlineData(250, "250ms")]
    [InlineData(0, "0s")]
    public void Formats_what_it_parses(long milliseconds, string text)
    {
        Assert.Equal(text, ConfigDuration.Format(TimeSpan.FromMilliseconds(milliseconds)));
        Assert.True(ConfigDuration.TryParse(text, out var back));
        Assert.Equal(TimeSpan.FromMilliseconds(milliseconds), back);
    }
}
